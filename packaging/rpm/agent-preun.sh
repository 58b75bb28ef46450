# calipso-agent %preun: on erase (not upgrade), stopped and disabled.
if [ "$1" -eq 0 ]; then
    systemctl --no-reload disable --now calipso-agent.service >/dev/null 2>&1 || :
fi
exit 0

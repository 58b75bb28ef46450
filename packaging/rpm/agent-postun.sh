# calipso-agent %postun: on upgrade, restarted if it was running. The state file and an edited
# configuration stay after erase (rpm has no purge).
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart calipso-agent.service >/dev/null 2>&1 || :
    fi
fi
exit 0

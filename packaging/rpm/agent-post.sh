# calipso-agent %post: its state directory, the unit enabled on install (started by the
# operator once configured), reloaded units.
install -d -o root -g root -m 0700 /var/lib/calipso-agent
chmod 0600 /etc/calipso/agent.toml
if [ "$1" -eq 1 ]; then
    systemctl --no-reload enable calipso-agent.service >/dev/null 2>&1 || :
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0

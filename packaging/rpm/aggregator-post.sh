# calipso-aggregator %post: directories, the secret key (the daemon cannot write /etc), the
# unit enabled on install (started by the operator once configured), reloaded units.
install -d -o calipso -g calipso -m 0700 /var/lib/calipso
if [ ! -e /etc/calipso/secret.key ]; then
    /usr/bin/calipso-aggregator secret-key --file /etc/calipso/secret.key
fi
# The daemon refuses a key anyone but its user can read.
chown calipso:calipso /etc/calipso/secret.key
chmod 0600 /etc/calipso/secret.key
chown root:calipso /etc/calipso/aggregator.toml
chmod 0640 /etc/calipso/aggregator.toml
if [ "$1" -eq 1 ]; then
    systemctl --no-reload enable calipso-aggregator.service >/dev/null 2>&1 || :
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0

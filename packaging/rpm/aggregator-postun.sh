# calipso-aggregator %postun: on upgrade, restarted if it was running. The store, the secret key
# and an edited configuration stay after erase (rpm has no purge): delete /var/lib/calipso and
# /etc/calipso/secret.key by hand to forget them.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart calipso-aggregator.service >/dev/null 2>&1 || :
    fi
fi
exit 0

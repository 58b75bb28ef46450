# calipso-aggregator %pre: the system user owns the store.
getent group calipso >/dev/null || groupadd --system calipso
getent passwd calipso >/dev/null || useradd --system --gid calipso --home-dir /var/lib/calipso \
    --no-create-home --shell /sbin/nologin --comment "Calipso aggregator" calipso
exit 0

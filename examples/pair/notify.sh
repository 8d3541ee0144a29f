#!/bin/sh
# keepalived's notify script for an uplinkd router pair: moves the
# connections conntrackd synced into the kernel when this router becomes
# master. After conntrackd's own primary-backup.sh.
#
# keepalived calls it as
#   notify.sh [--conntrackd BIN] [--config FILE] [--lock FILE] [--log FILE] INSTANCE NAME STATE PRIORITY
# with STATE MASTER, BACKUP, FAULT or STOP. The options (or the variables
# CONNTRACKD, CONNTRACKD_CONFIG, CONNTRACKD_LOCK, NOTIFY_LOG) say where
# conntrackd and its files are; the defaults are Debian's.

CONNTRACKD=${CONNTRACKD:-conntrackd}
CONNTRACKD_CONFIG=${CONNTRACKD_CONFIG:-/etc/conntrackd/conntrackd.conf}
CONNTRACKD_LOCK=${CONNTRACKD_LOCK:-/var/lock/conntrack.lock}
NOTIFY_LOG=${NOTIFY_LOG:-}

while [ $# -gt 0 ]; do
    case "$1" in
        --conntrackd) CONNTRACKD=$2; shift 2 ;;
        --config) CONNTRACKD_CONFIG=$2; shift 2 ;;
        --lock) CONNTRACKD_LOCK=$2; shift 2 ;;
        --log) NOTIFY_LOG=$2; shift 2 ;;
        *) break ;;
    esac
done

if [ $# -ne 4 ]; then
    echo "usage: $0 [options] INSTANCE|GROUP NAME STATE PRIORITY (as keepalived's notify calls it)" >&2
    exit 2
fi
STATE=$3

log() {
    [ -n "$NOTIFY_LOG" ] && echo "$(date +%s.%N) $*" >> "$NOTIFY_LOG"
    return 0
}

ctd() {
    "$CONNTRACKD" -C "$CONNTRACKD_CONFIG" "$@"
    status=$?
    log "$STATE: conntrackd $* exited $status"
    return $status
}

log "$STATE: $1 $2 priority $4"
case "$STATE" in
    MASTER)
        # The connections the old master synced, into the kernel table, before
        # their next packets arrive (forwarded or reset depends on it).
        ctd -c
        # Start afresh: both caches emptied, the internal one refilled from
        # the kernel table (the connections just committed included) and
        # sent in bulk to the peer, should it come back as backup.
        ctd -f
        ctd -R
        ctd -B
        log "$STATE: committed"
        ;;
    BACKUP)
        # Is conntrackd running? A crashed one leaves its lock behind; start it again.
        if ! ctd -s > /dev/null; then
            if [ -f "$CONNTRACKD_LOCK" ]; then
                rm -f "$CONNTRACKD_LOCK"
                ctd -d
            fi
        fi
        # Entries this router may still hold from being master expire soon;
        # then ask the master for everything it has.
        ctd -t
        ctd -n
        ;;
    FAULT)
        ctd -t
        ;;
esac
exit 0

#!/bin/sh
# Satoyama Edge: overwrite secrets on the FAT boot partition before they are deleted.
#
#   sh wipe.sh [--keep] FILE...
#
# FAT frees a deleted file's clusters but leaves their bytes on the card, where
# anyone with the card (or an image of it) reads them back.  So each FILE is
# first overwritten in place - zeros over its whole length, rounded up to 64 KiB
# so the slack of its last cluster is covered too - and flushed to the card,
# and only then deleted (or, with --keep, emptied: the caller writes new
# contents into it).  FAT writes in place: the same clusters get the zeros
# (tests/deploy/test_wipe.py checks it on a real FAT image).  It never prints
# a file's contents.
set -eu

keep=false
if [ "${1:-}" = --keep ]; then
    keep=true
    shift
fi
status=0
for f in "$@"; do
    [ -f "$f" ] || continue
    size=$(wc -c <"$f")
    blocks=$(( (size + 65535) / 65536 ))
    if [ "$blocks" -gt 0 ] && dd if=/dev/zero of="$f" bs=65536 count="$blocks" conv=notrunc,fsync 2>/dev/null; then
        :
    elif [ "$blocks" -gt 0 ]; then
        echo "wipe.sh: could not overwrite $f" >&2
        status=1
        continue
    fi
    sync
    if $keep; then
        : >"$f"
    else
        rm -f "$f"
    fi
done
sync
exit $status

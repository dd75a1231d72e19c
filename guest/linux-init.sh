#!/bin/busybox sh
# /init of the Linux test guest (scripts/build-linux-guest.sh): a Debian
# kernel and an initramfs of Debian's busybox and redis.  The workload is
# a program nobody here wrote: redis-server, driven by redis-benchmark
# inside the guest, writing values of 1 KiB to random keys over a
# keyspace that fills about half of guest RAM.  redis-benchmark -l prints
# its rate every 250 ms; each print becomes a report on the serial line
# in the test guest's own format (guest/guest.c), which the harness
# reads the same way:
#   PCG READY cpus=N interval=250 clock=uptime keys=K
#   PCG I n=SEQ t=MS ops=REQUESTS max=0
# t= is the guest's /proc/uptime in milliseconds (10 ms steps); ops= the
# requests done since the report before.  Kernel command line: keys=K
# (default: from MemTotal), datasize=BYTES (1024).
/bin/busybox mkdir -p /proc /sys /dev /tmp /bin /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
exec > /dev/ttyS0 2>&1 < /dev/ttyS0
ip link set lo up

arg()
{
    sed -n "s/.*\<$1=\([^ ]*\).*/\1/p" /proc/cmdline
}

size=$(arg datasize)
size=${size:-1024}
keys=$(arg keys)
if [ -z "$keys" ]; then
    mem_kb=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
    # Half of RAM: each key holds its value and about 200 bytes of
    # redis's own.
    keys=$((mem_kb * 1024 / 2 / (size + 200)))
fi

redis-server --save '' --appendonly no --bind 127.0.0.1 \
    --protected-mode no --daemonize yes --logfile /tmp/redis.log
until redis-cli ping > /dev/null 2>&1; do
    sleep 0.2
done
# Every key once, so that the timed loop rewrites values already there.
redis-benchmark -t set -n "$keys" -r "$keys" -d "$size" -P 32 -q \
    > /tmp/fill.log 2>&1
used=$(redis-cli info memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p')

# Each print ends with a carriage return; its rps= is the rate since the
# print before it.  READY comes once the loop has run for 40 prints
# (10 s): redis and the guest settle in the first seconds, and
# the harness takes the rate right after READY as the rate before.
redis-benchmark -l -t set -r "$keys" -d "$size" -P 16 2>&1 |
    awk -v cpus="$(nproc)" -v keys="$keys" -v used="$used" -v warm=40 '
         BEGIN { RS = "\r"; n = 0; last = -1 }
         /rps=/ {
             getline up < "/proc/uptime"; close("/proc/uptime")
             split(up, f, " "); t = int(f[1] * 1000)
             match($0, /rps=[0-9.]+/)
             rps = substr($0, RSTART + 4, RLENGTH - 4)
             if (n == warm) {
                 printf "PCG READY cpus=%d interval=250 clock=uptime " \
                        "keys=%d used=%d\n", cpus, keys, used
             }
             if (n > warm && t > last) {
                 printf "PCG I n=%d t=%d ops=%d max=0\n", n, t,
                        rps * (t - last) / 1000
             }
             fflush()
             n++; last = t
         }'
echo "PCG END"
poweroff -f

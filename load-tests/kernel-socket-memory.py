#!/usr/bin/env python3
"""Kernel memory per idle loopback TCP connection: opens N connections to a local listener
(the accepted ends registered in one epoll set, as a tokio server does), holds them idle,
and reports the deltas of /proc/meminfo Slab and of the socket-related /proc/slabinfo
caches, per connection (both ends on this machine) and per accepted socket."""
import resource, select, socket, sys, time
N = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

def meminfo():
    d = {}
    for l in open('/proc/meminfo'):
        k, v = l.split(':'); d[k] = int(v.split()[0])
    return d
def slabinfo():
    d = {}
    for l in open('/proc/slabinfo').readlines()[2:]:
        f = l.split()
        d[f[0]] = int(f[1]) * int(f[3])  # active_objs * objsize
    return d
def sockstat():
    for l in open('/proc/net/sockstat'):
        if l.startswith('TCP:'):
            f = l.split(); return dict(zip(f[1::2], map(int, f[2::2])))

ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(('127.0.0.1', 0)); ls.listen(4096); port = ls.getsockname()[1]
ep = select.epoll()
time.sleep(0.5)
m0, s0, t0 = meminfo(), slabinfo(), sockstat()
clients, servers = [], []
for i in range(N):
    c = socket.socket(); c.bind(('127.%d.%d.1' % (1 + i // 250 // 250, (i // 250) % 250), 0))
    c.connect(('127.0.0.1', port)); clients.append(c)
    s, _ = ls.accept(); s.setblocking(False); ep.register(s.fileno(), select.EPOLLIN); servers.append(s)
time.sleep(1.0)
m1, s1, t1 = meminfo(), slabinfo(), sockstat()
slab = (m1['Slab'] - m0['Slab']) * 1024
print(f"connections {N}; tcp_rmem {open('/proc/sys/net/ipv4/tcp_rmem').read().split()} tcp_wmem {open('/proc/sys/net/ipv4/tcp_wmem').read().split()}")
print(f"meminfo Slab delta: {slab/N:.0f} B per connection (both ends), {slab/N/2:.0f} B per socket")
print(f"sockstat TCP mem delta (pages of buffers): {t1['mem']-t0['mem']}; inuse delta {t1['inuse']-t0['inuse']}")
tot = 0
for k in sorted(s1, key=lambda k: -(s1[k] - s0.get(k, 0))):
    d = s1[k] - s0.get(k, 0)
    if abs(d) / N >= 16:
        print(f"  slab {k}: {d/N:.0f} B per connection")
        tot += d
print(f"  those caches together: {tot/N:.0f} B per connection, {tot/N/2:.0f} B per socket")
m = meminfo()
print(f"MemAvailable delta: {(m0['MemAvailable']-m['MemAvailable'])*1024/N:.0f} B per connection")

"""btdht's README example as a script: DHT(), start(), then a blocking get_peers (or
announce_peer); save() and load() with their default file name. Only the import line
differs from a script for btdht itself.

usage: user.py BIND_IP BOOTSTRAP_IP:PORT announce|get INFOHASH_HEX
"""

import binascii
import sys
import time

import smartget.dht.btdht as btdht  # for btdht: import btdht

ip, boot, action, ih_hex = sys.argv[1:5]
host, port = boot.split(":")
dht = btdht.DHT(bind_ip=ip)
dht.start()  # btdht's README: now wait for the dht to bootstrap
dht.bootstarp([(host, int(port))])
deadline = time.time() + 15
while dht.root.stats()[1] < 2 and time.time() < deadline:  # good nodes
    time.sleep(0.1)
info_hash = binascii.a2b_hex(ih_hex)
if action == "announce":
    dht.announce_peer(info_hash, 6881)
    print("announced", flush=True)
else:
    print("peers", dht.get_peers(info_hash, limit=1), flush=True)
dht.save()  # dht_<id>.status
print("threads", len(dht.threads), "debuglvl", dht.debuglvl, "alive", dht.is_alive(), flush=True)
dht.stop()
print("stoped", dht.stoped, "zombie", bool(dht.zombie), flush=True)
again = btdht.DHT(bind_ip=ip, id=dht.myid.value)
again.load()  # the same default file name
print("loaded", again.root.stats()[0], flush=True)

"""A btdht crawler written as btdht's users write one (its README: inherit DHT_BASE and
overload on_*_query); only the import line differs from a script for btdht itself.

usage: crawler.py BIND_IP BOOTSTRAP_IP:PORT   (runs until its stdin is closed)
"""

import binascii
import sys

from smartget.dht.btdht import DHT_BASE  # for btdht: from btdht import DHT_BASE


class Crawler(DHT_BASE):
    def on_get_peers_query(self, query):
        print("get_peers", binascii.b2a_hex(query[b"info_hash"]).decode(), flush=True)

    def on_announce_peer_query(self, query):
        info_hash = binascii.b2a_hex(query[b"info_hash"]).decode()
        print("announce_peer", info_hash, query.addr[0], query[b"port"], flush=True)

    def on_ping_response(self, query, response):
        print("pong", response[b"id"] == query.get(b"id"), flush=True)


ip, boot = sys.argv[1], sys.argv[2].split(":")
dht = Crawler(bind_ip=ip, debuglvl=0)
dht.register_message(b"get_peers")
dht.register_message(b"announce_peer")
dht.start()
dht.bootstarp([(boot[0], int(boot[1]))])
print("ready", dht.bind_port, len(dht.threads), dht.is_alive(), flush=True)
for _ in sys.stdin:  # until the test closes our stdin
    pass
dht.stop()
print("stopped", dht.stoped, bool(dht.zombie), flush=True)

#!/usr/bin/env python3
"""TLS in front of a JSON-RPC node, for the test of https RPC URLs: terminates TLS with the given
certificate and forwards each POST to the node over plain HTTP, answering with the node's reply.

Usage: tls-proxy.py CERT KEY UPSTREAM_URL   (prints the port it listens on, then serves)
"""
import http.server
import ssl
import sys
import urllib.request


class Forward(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        request = urllib.request.Request(
            UPSTREAM, data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            answer = reply.read()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


cert, key, UPSTREAM = sys.argv[1:4]
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forward)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()

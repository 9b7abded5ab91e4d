#!/usr/bin/env python3
"""TLS in front of a plain-HTTP peer (a JSON-RPC node, an IPFS gateway), for the tests of https://
and wss:// URLs (started by crates/test-peers/src/tls.rs): terminates TLS with the given
certificate and relays the bytes of each connection to the peer's plain port, so HTTP requests and
WebSocket sessions both pass.

Usage: tls-proxy.py CERT KEY UPSTREAM_URL   (prints the port it listens on, then serves)
"""
import asyncio
import ssl
import sys
import urllib.parse


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


async def relay(client_reader, client_writer):
    try:
        node_reader, node_writer = await asyncio.open_connection(HOST, PORT)
    except OSError:
        client_writer.close()
        return
    await asyncio.gather(pipe(client_reader, node_writer), pipe(node_reader, client_writer))


async def main():
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(CERT, KEY)
    server = await asyncio.start_server(relay, "127.0.0.1", 0, ssl=context)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


CERT, KEY, UPSTREAM = sys.argv[1:4]
upstream = urllib.parse.urlsplit(UPSTREAM)
HOST, PORT = upstream.hostname, upstream.port
asyncio.run(main())

a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM); a.send(b"d1"); a.send(b"d2")
serve(lambda: (b.recv(10), b.recv(10)) == (b"d1", b"d2") or "datagrams lost")

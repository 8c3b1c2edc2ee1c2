a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET); a.send(b"record")
serve(lambda: b.recv(100) == b"record" or "record lost")

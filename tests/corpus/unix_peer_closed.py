a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM); a.send(b"last words"); a.close()
serve(lambda: (b.recv(100), b.recv(100)) == (b"last words", b"") or "EOF or data lost")

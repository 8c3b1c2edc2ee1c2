l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); l.bind(("127.0.0.1", 7001)); l.listen()
def check():
    c = socket.create_connection(("127.0.0.1", 7001)); s, _ = l.accept(); c.send(b"t")
    return s.recv(1) == b"t" or "no data"
serve(check)

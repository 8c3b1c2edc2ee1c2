l = socket.socket(); l.bind(("127.0.0.1", 7003)); l.listen()
c = socket.create_connection(("127.0.0.1", 7003)); s, _ = l.accept(); c.shutdown(socket.SHUT_WR)
def check():
    if s.recv(10) != b"": return "no EOF"
    s.send(b"still open")
    return c.recv(100) == b"still open" or "other direction lost"
serve(check)

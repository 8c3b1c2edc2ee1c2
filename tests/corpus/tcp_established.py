l = socket.socket(); l.bind(("127.0.0.1", 7002)); l.listen()
c = socket.create_connection(("127.0.0.1", 7002)); s, _ = l.accept(); c.send(b"queued")
def check():
    if s.recv(100) != b"queued": return "queued data lost"
    s.send(b"back")
    return c.recv(100) == b"back" or "no reply"
serve(check)

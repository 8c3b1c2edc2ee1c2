l = socket.socket(socket.AF_UNIX); l.bind(path("sock")); l.listen()
c = socket.socket(socket.AF_UNIX); c.connect(path("sock"))
def check():
    s, _ = l.accept(); c.send(b"hello")
    return s.recv(10) == b"hello" or "pending connection lost"
serve(check)

l = socket.socket(socket.AF_UNIX); l.bind(path("sock")); l.listen()
c = socket.socket(socket.AF_UNIX); c.connect(path("sock")); c.send(b"hello")
def check():
    s, _ = l.accept()
    return s.recv(10) == b"hello" or "pending connection lost"
serve(check)

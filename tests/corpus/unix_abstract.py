name = "\0cns-corpus-%d" % os.getpid()
l = socket.socket(socket.AF_UNIX); l.bind(name); l.listen()
def check():
    c = socket.socket(socket.AF_UNIX); c.connect(name); s, _ = l.accept(); c.send(b"z")
    return s.recv(1) == b"z" or "no data"
serve(check)

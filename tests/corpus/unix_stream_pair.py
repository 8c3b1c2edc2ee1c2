a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM); a.send(b"before")
def check():
    if b.recv(100) != b"before": return "queued data lost"
    b.send(b"after")
    return a.recv(100) == b"after" or "no reply"
serve(check)

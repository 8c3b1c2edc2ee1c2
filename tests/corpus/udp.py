a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); a.bind(("127.0.0.1", 7004))
b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); b.connect(("127.0.0.1", 7004))
def check():
    b.send(b"u")
    return a.recv(10) == b"u" or "no datagram"
serve(check)

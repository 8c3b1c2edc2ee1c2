n = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0); n.bind((0, 0))
def check():
    # RTM_GETLINK dump request
    req = struct.pack("=IHHII", 32, 18, 0x301, 1, 0) + struct.pack("=BxHiII", 0, 0, 0, 0, 0)
    n.send(req)
    return len(n.recv(65536)) > 16 or "no answer"
serve(check)

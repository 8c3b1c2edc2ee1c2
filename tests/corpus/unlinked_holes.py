f = open(path("holes"), "w+b")
for off in (0, 8 << 20, 40 << 20):
    f.seek(off); f.write(b"data@%d" % off)
f.flush(); os.unlink(path("holes"))
def check():
    for off in (0, 8 << 20, 40 << 20):
        f.seek(off)
        if f.read(len(b"data@%d" % off)) != b"data@%d" % off:
            return "data at %d lost" % off
    f.seek(1 << 20)
    return f.read(16) == b"\0" * 16 or "hole filled"
serve(check)

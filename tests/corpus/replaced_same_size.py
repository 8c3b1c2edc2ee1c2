with open(path("r"), "wb") as w:
    w.write(b"old-content")
f = open(path("r"), "rb")
with open(path("r.new"), "wb") as w:
    w.write(b"new-content")
os.rename(path("r.new"), path("r"))
serve(lambda: (f.seek(0), f.read() == b"old-content")[1] or "the fd sees the new file")

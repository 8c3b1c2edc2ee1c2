with open(path("a"), "wb") as f:
    f.write(b"linked")
os.link(path("a"), path("b"))
f = open(path("a"), "rb"); os.unlink(path("a"))
serve(lambda: (f.seek(0), f.read() == b"linked")[1] and os.path.exists(path("b")) or "lost")

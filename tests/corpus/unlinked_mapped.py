with open(path("mapped"), "w+b") as f:
    f.write(b"m" * 8192); f.flush()
    m = mmap.mmap(f.fileno(), 8192)
os.unlink(path("mapped"))
serve(lambda: m[:8192] == b"m" * 8192 or "mapping differs")

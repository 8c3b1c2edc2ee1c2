with open(path("mapped"), "w+b") as f:
    f.write(b"k" * 4096); f.flush(); m = mmap.mmap(f.fileno(), 4096, prot=mmap.PROT_READ)
serve(lambda: m[:4096] == b"k" * 4096 or "mapping differs")

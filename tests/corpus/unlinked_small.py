f = open(path("small"), "w+b"); f.write(b"x" * 100); f.flush(); os.unlink(path("small"))
serve(lambda: (f.seek(0), f.read() == b"x" * 100)[1] or "content differs")

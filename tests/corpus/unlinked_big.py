data = os.urandom(4 << 20)
f = open(path("big"), "w+b"); f.write(data); f.flush(); os.unlink(path("big"))
serve(lambda: (f.seek(0), f.read() == data)[1] or "content differs")

fs = []
for i in range(3):
    f = open(path("s%d" % i), "w+b"); f.write(b"file %d" % i); f.flush(); os.unlink(path("s%d" % i)); fs.append(f)
serve(lambda: all((f.seek(0), f.read() == b"file %d" % i)[1] for i, f in enumerate(fs)) or "content differs")

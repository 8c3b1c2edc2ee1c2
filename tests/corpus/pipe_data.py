r, w = os.pipe(); os.write(w, b"y" * 1000)
serve(lambda: os.read(r, 2000) == b"y" * 1000 or "data lost")

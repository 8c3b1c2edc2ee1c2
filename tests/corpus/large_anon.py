b = bytearray(256 << 20)
for i in range(0, len(b), 4096):
    b[i] = (i >> 12) & 0xff
serve(lambda: all(b[i] == (i >> 12) & 0xff for i in range(0, len(b), 4096 * 97)) or "memory differs")

import threading
counts = [0] * 4
def work(i):
    while True:
        counts[i] += 1; time.sleep(0.01)
for i in range(4):
    threading.Thread(target=work, args=(i,), daemon=True).start()
def check():
    before = list(counts); time.sleep(0.3)
    return all(a > b for a, b in zip(counts, before)) or "a thread stopped: %s %s" % (before, counts)
serve(check)

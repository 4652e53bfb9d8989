# Holds TCP connections open the way any local program could, as whatever user runs it.
# Arguments: HOST PORT COUNT [SOURCE-ADDRESS ...]; the connections take the source addresses
# in turn. Prints "held N" once connected, then answers each line read on standard input with
# how many of them the server has not closed; exits at the end of its input.
import socket
import sys

host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sources = sys.argv[4:] or [""]
held = []
for i in range(count):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.bind((sources[i % len(sources)], 0))
    s.connect((host, port))
    held.append(s)
print("held", len(held), flush=True)


def still_open(s):
    # End of stream or a reset: the server closed it.
    try:
        return s.recv(16, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


for _ in sys.stdin:
    print(sum(still_open(s) for s in held), flush=True)

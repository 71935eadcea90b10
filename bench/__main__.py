import sys

from bench import heartbeats

heartbeats.main(sys.argv[1:])

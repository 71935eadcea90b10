import sys

from bench import cap, emergency, heartbeats, live, province

args = sys.argv[1:]
if args[:1] == ["emergency"]:
    emergency.main(args[1:])
elif args[:1] == ["heartbeats"]:
    heartbeats.main(args[1:])
elif args[:1] == ["cap"]:
    cap.main(args[1:])
elif args[:1] == ["live"]:
    live.main(args[1:])
elif args[:1] == ["province"]:
    province.main(args[1:])
else:
    heartbeats.main(args)
    emergency.main([])
    cap.main([])
    live.main([])
    province.main([])

"""The nap room: each cot's body-motion mat, the five-minute posture check, prone and apnea alarms,
and the nap check sheet (午睡チェック表) a nursery files.

``cot`` is the pure rule for one cot; ``mat`` derives occupancy, load, motion and breathing from
frames; ``mat_watch`` and ``watch`` are the daemon tasks; ``log`` is the device-local record and
``sheet`` prints it.  Children's names never leave the device.
"""

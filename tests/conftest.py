import os

# Tests never open windows: make any accidental cv2.imshow fail loudly instead of aborting.
os.environ.pop("DISPLAY", None)
os.environ.pop("WAYLAND_DISPLAY", None)

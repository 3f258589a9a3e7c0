"""The camera daemon: frames from a source (Pi camera, V4L2/USB, GStreamer, RTSP, a video file) onto the bus."""

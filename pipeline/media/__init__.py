"""Media files with PyAV (FFmpeg): decoding video frames and audio, whatever the container and codec
(`decode`), a video's window and crop (`source`; the window rule per manifest clip is
`pipeline.corpus.clip_media`), and encoding an MP4 (H.264 + AAC) whose bytes
depend on its input alone (`encode.write_mp4`). Import from `pipeline.media`.

Every failure is a `MediaError` that names the file and the cause (missing file, no such stream,
corrupt or truncated data, an unwritable target), so a stage can report it per clip instead of dying
with a traceback.

Windows and crops (the manifest's `start`, `end`, `crop`: `pipeline.corpus.manifest`). `read_audio` and
`iter_video_frames` take a time window [start, end) of the file, in seconds of the media's
presentation time (null start: 0, null end: the end of the track); every time they give counts from
the window's start. `iter_video_frames` also takes a crop (x0, y0, x1, y1 as fractions of the frame)
cut from every frame: pixel columns round(x0·W) … round(x1·W), rows likewise.

THE WINDOW RULE lives in `clip_audio`, `clip_frames` (and `clip_audio_source`, `clip_video_source`),
which every extractor uses: the window applies to `media_path`; when the clip has
a separate `audio_path` the audio is that WHOLE file (IEMOCAP's per-utterance WAVs), otherwise the
audio is the same window of `media_path`.

Long files: a window deep into a file does not decode the file from its start. Video seeks to the
keyframe at or before `start` (`container.seek`) and decodes forward from there: the frames are the
ones a decode from the file start gives (decoding restarts at a keyframe). Audio seeks to
`AUDIO_PREROLL_S` before `start` when the window starts later than that (the decoder and the
resampler settle over the pre-roll; MP3's bit reservoir, AAC's overlap); samples are then placed by
the first decoded frame's timestamp: exact where the container's time base is a sample or finer
(WAV, MP4); where it is coarser (FLV: 1 ms), the first frame's sample index is snapped to the codec's
frame grid (MP3: 1152 samples, AAC: 1024), exact for a track of equal-sized frames from its start
(what those codecs write; tested on CREMA-D's FLV/MP3). A window starting within
`AUDIO_PREROLL_S` of the file start decodes from the start and is exactly the whole-file signal sliced
at [round(start·sr), round(end·sr)) (tested). Either way the input is resampled from an input sample
on the output grid, so the samples are the whole file's own output samples, not an interpolation between
them.

A window that starts at or after the end of the track, or ends more than `WINDOW_TOLERANCE_S` after
it, is a `MediaError` naming the file and the window; a window ending within the tolerance after the
track (a container's tracks end a little apart) is cut at the track's end.
"""

from pipeline.media.decode import (
    AUDIO_POSTROLL_S,
    AUDIO_PREROLL_S,
    WINDOW_TOLERANCE_S,
    MediaError,
    MediaInfo,
    check_crop,
    crop_pixels,
    iter_video_frames,
    probe,
    read_audio,
    sample_times,
    silent_steps,
    window_label,
)
from pipeline.media.encode import write_mp4
from pipeline.media.source import VideoSource

__all__ = [
    "VideoSource",
    "AUDIO_POSTROLL_S", "AUDIO_PREROLL_S", "WINDOW_TOLERANCE_S", "MediaError", "MediaInfo",
    "check_crop",
    "crop_pixels", "iter_video_frames", "probe", "read_audio", "sample_times", "silent_steps", "window_label", "write_mp4",
]

"""Restoring videos: streaming decode -> restore -> encode, faces tracked across frames.

Owns :mod:`.media` (PyAV behind one import guard, recognising videos by
content, probing, codecs and containers), :mod:`.tracking` (face tracks, the
One-Euro landmark filter, scene cuts), :mod:`.frames` (one frame restored with
the photo pipeline from tracked, smoothed faces), :mod:`.segments` (the
manifest that makes a run resumable), :mod:`.mux` (encoding segments, joining
them with the audio and subtitles of the input) and :mod:`.stream` (the three
stages joined by bounded queues, and :func:`restore_video`) and :mod:`.flicker`
(the flicker measure the benchmark and tests use).

Layer 4. May import: elir_cli.pipeline, elir_cli.faces, elir_cli.images, elir_cli.registry, elir_cli.model.
"""

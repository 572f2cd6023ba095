"""Measuring caption quality: ``scalecap eval`` (METHOD.md section 5).

Metric logic lives in plain modules, importable without the CLI and without torch:

* ``vqa``       caption-only VQA, the Prism protocol (answerer, extractor, judge models)
* ``captionqa`` CaptionQA scoring (correct 1, wrong 0, "cannot answer" 1/n + 0.05)
* ``chair``     CHAIR_s, CHAIR_i, recall and length on COCO
* ``capture``   the CAPTURE score (scene-graph objects, attributes, relations)
* ``compare``   several caption sets or result files side by side
* ``captions``, ``benchmarks``, ``answers``, ``provenance``, ``models``: shared pieces

``cli`` is the thin typer front end (``scalecap eval ...``). See docs/eval.md.
"""

"""scalecap: detailed, hallucination-resistant image captions at dataset scale.

The public API::

    from scalecap import ScaleCap
    sc = ScaleCap(model="Qwen/Qwen2.5-VL-7B-Instruct")
    result = sc.caption("photo.jpg")
    print(result.final_caption)
"""

__version__ = "0.1.0"



def __getattr__(name: str):
    # The pipeline pulls in the backends lazily so that `import scalecap` stays cheap.
    if name in ("ScaleCap",):
        from .pipeline import ScaleCap

        return ScaleCap
    if name in ("split_sentences", "Sentence"):
        from .text import sentences

        return getattr(sentences, name)
    if name == "CaptionResult":
        from .records import CaptionResult

        return CaptionResult
    if name in ("run_job", "CaptionJob"):
        from . import run

        return getattr(run, name)
    if name in ("Settings", "ModelConfig", "RunConfig"):
        from . import config

        return getattr(config, name)
    raise AttributeError(name)


__all__ = ["ScaleCap", "CaptionResult", "Settings", "ModelConfig", "RunConfig", "split_sentences", "Sentence",
           "run_job", "CaptionJob"]

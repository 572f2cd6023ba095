"""Distributors other than the local one (``scalecap.run``): Ray (``ray_runner``).

Imported lazily: ``import scalecap`` never imports Ray.
"""

__all__ = ["caption_ray_dataset", "run_ray_job", "ScaleCapFactory", "init_ray"]


def __getattr__(name: str):
    if name in __all__:
        from . import ray_runner

        return getattr(ray_runner, name)
    raise AttributeError(name)

"""Renderers. `RaycastRenderer` / `Camera` (embodied.render.raycast): CPU Embree ray caster giving
RGB, depth, semantic and instance images. Loaded lazily: importing open3d takes over a second."""

__all__ = ["Camera", "RaycastRenderer"]


def __getattr__(name):
    if name in __all__:
        from embodied.render import raycast

        return getattr(raycast, name)
    raise AttributeError(f"module 'embodied.render' has no attribute {name!r}")

"""C3D, R(2+1)D-18 and S3D as torch modules, plus small variants for tests."""
from .c3d import C3D
from .r2plus1d import R2Plus1D
from .s3d import S3D
from .zoo import ZOO, export_onnx, get_model

__all__ = ["C3D", "R2Plus1D", "S3D", "ZOO", "get_model", "export_onnx"]

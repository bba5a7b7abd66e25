"""Data: offline sources, the benchmark protocols, and user image collections."""

from .lists import (
    ImageList,
    ListFileError,
    folder_layout,
    read_image_folder,
    read_images,
    read_list_file,
    read_unlabelled_folder,
)
from .protocols import PROTOCOLS, Protocol, load_protocol, make_protocol, prepare_protocol, protocol_path
from .sources import DataNotFoundError, ImageSource, data_home, load_fashion_mnist, load_mnist, read_idx

__all__ = [
    "DataNotFoundError",
    "ImageList",
    "ImageSource",
    "ListFileError",
    "PROTOCOLS",
    "Protocol",
    "data_home",
    "folder_layout",
    "load_fashion_mnist",
    "load_mnist",
    "load_protocol",
    "make_protocol",
    "prepare_protocol",
    "protocol_path",
    "read_idx",
    "read_image_folder",
    "read_images",
    "read_list_file",
    "read_unlabelled_folder",
]

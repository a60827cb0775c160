"""ament_python package definition; also installs with plain pip (`pip install -e .`)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "dpt_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["tests", "tests.*"]),
    package_data={PACKAGE: ["data/*.png", "data/*.json", "data/sample_drive/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
    ],
    python_requires=">=3.10",
    install_requires=["numpy", "pyyaml", "opencv-python-headless", "torch", "timm", "safetensors"],
    extras_require={
        "bag": ["rosbags>=0.11.9"],
        # The bag tool on a Ray cluster (`--ray`, dpt_ros/fleet.py).
        "ray": ["rosbags>=0.11.9", "ray==2.60.0"],
        "test": ["pytest", "transformers"],
        # The webcam demo's window: OpenCV with a GUI. It provides the same `cv2` module as the
        # default opencv-python-headless, so remove that one (README, "Webcam demo").
        "gui": ["opencv-python>=4.9"],
        # PLY export and the live point-cloud window (webcam snapshots and --cloud, bag --export).
        "open3d": ["open3d-cpu==0.20.0"],
        # The TensorRT backend (EngineConfig.backend='tensorrt', CUDA): the build for torch 2.14.
        "tensorrt": ["torch-tensorrt>=2.14,<2.15"],
    },
    zip_safe=True,
    maintainer="dpt_ros maintainers",
    maintainer_email="dpt_ros@example.org",
    description="Metric depth, point clouds and segmentation from camera streams with DPT.",
    license="MIT",
    entry_points={
        "console_scripts": [
            "depth_node = dpt_ros.ros.node:main",
            "dpt_predict = dpt_ros.predict:main",
            "dpt_bag = dpt_ros.bag.cli:main",
            "dpt_webcam = dpt_ros.webcam:main",
        ],
    },
)

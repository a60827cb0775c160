"""ament_python package definition; also installs with plain pip (`pip install -e .`)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "dpt_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["tests", "tests.*"]),
    package_data={PACKAGE: ["data/*.png", "data/*.json"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
    ],
    python_requires=">=3.10",
    install_requires=["numpy", "pyyaml", "opencv-python-headless", "torch", "timm", "safetensors"],
    extras_require={"bag": ["rosbags>=0.11.9"], "test": ["pytest", "transformers"]},
    zip_safe=True,
    maintainer="dpt_ros maintainers",
    maintainer_email="dpt_ros@example.org",
    description="Metric depth, point clouds and segmentation from camera streams with DPT.",
    license="MIT",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "depth_node = dpt_ros.ros.node:main",
            "dpt_predict = dpt_ros.predict:main",
        ],
    },
)

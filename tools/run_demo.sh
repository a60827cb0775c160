#!/usr/bin/env bash
# The main job on the bundled sample: the offline bag tool on dpt_ros/data/sample_drive (a
# synthetic 2-second drive: camera, camera_info, LiDAR, /tf_static), written to out/demo:
# an output bag (input topics + depth, clouds, colour images), a preview MP4 and a contact sheet.
# Offline machines use random weights (DPT_WEIGHTS=random, the default here); with network
# access, DPT_WEIGHTS=dpt_hybrid downloads and verifies the authors' released checkpoint once.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
OUT="${DPT_OUT:-out/demo}"
WEIGHTS="${DPT_WEIGHTS:-random}"
BAG="$OUT/sample_drive_depth"
mkdir -p "$OUT"
if [ "$WEIGHTS" = "random" ]; then
    echo "dpt_ros demo: RANDOM weights (offline). The network has not learnt anything, so the"
    echo "  depth pictures are noise and no metric scale can be fitted to the LiDAR: the summary"
    echo "  will say so, and that is expected. DPT_WEIGHTS=dpt_hybrid uses the released checkpoint."
fi
.venv/bin/python -m dpt_ros.bag dpt_ros/data/sample_drive --out "$BAG" --overwrite \
    --model "${DPT_MODEL:-dpt_hybrid}" --weights "$WEIGHTS" --export preview,png \
    --report "$OUT/sample_drive_report.json" "$@"
echo
echo "dpt_ros demo: done. What it wrote:"
echo "  $BAG/"
echo "      the output bag (MCAP): the input topics plus /camera/depth_relative/image,"
echo "      /camera/depth/color, /camera/depth/camera_info and, once a metric scale is known,"
echo "      /camera/depth/image and /camera/points; open the .mcap in Foxglove"
echo "  $BAG/exports/camera/preview.mp4"
echo "      video, frame by frame: input | depth colour map (warm = near)"
echo "  $BAG/exports/camera/contact_sheet.png"
echo "      six frames of that video in one picture"
echo "  $BAG/exports/camera/depth_png/"
echo "      16-bit depth PNGs (*_depth_mm.png, millimetres; *_inverse_depth.png where no metric scale is known)"
echo "  $OUT/sample_drive_report.json"
echo "      the summary above as JSON"

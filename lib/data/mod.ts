/**
 * Image data for ConvNeXt: PIL-exact decoding, Pillow-exact bicubic resizing, the
 * official eval transform, batched prefetching loading, and the ImageNet-1k classes.
 *
 * @example
 * ```ts
 * import { imagenetClasses, loadImageTensor } from "./mod.ts";
 * import { selectBackend } from "../backend/select.ts";
 * await selectBackend("cpu");
 * const path = new URL("../../data/images/coffee.jpg", import.meta.url).pathname;
 * const x = await loadImageTensor(path, 224); // [1, 224, 224, 3], the official eval transform
 * const labels = imagenetClasses(); // 1000 names
 * console.log(x.shape, labels.length);
 * x.dispose();
 * ```
 *
 * @module
 */

export type { PixelData, RgbImage } from "../util/image.ts";
export {
  comparePython,
  findClasses,
  IMAGE_EXTENSIONS,
  type ImageFolder,
  type ImageFolderOptions,
  type ImageFolderSample,
  isImageFile,
  listImageFolder,
} from "./image_folder.ts";
export { cmykToRgb, decodeImage, readImage } from "./decode.ts";
export { type CropRegion, resizeBicubic, type ResizeOptions } from "./resize.ts";
export {
  centerCrop,
  DEFAULT_CROP_PCT,
  evalResizeCrop,
  evalTransform,
  type EvalTransformOptions,
  IMAGENET_MEAN,
  IMAGENET_STD,
  normalize,
  shorterSideSize,
} from "./transform.ts";
export { defaultWorkerCount, PreprocessPool } from "./pool.ts";
export {
  type ImageBatch,
  imageBatches,
  type ImageBatchOptions,
  type ImageFailure,
} from "./batches.ts";
export { loadImageTensor, preprocessBatch } from "./tensor.ts";
export {
  type ImagenetClass,
  imagenetClasses,
  imagenetClassInfo,
  imagenetWnids,
} from "./imagenet.ts";
export { ensureFlowerPhotos, FLOWER_PHOTOS_URL } from "./datasets.ts";
export { extractTar } from "./tar.ts";

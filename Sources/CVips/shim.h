// Fixed-argument wrappers over the few libvips calls graft uses: libvips' C API is
// variadic (NULL-terminated option lists), which Swift cannot call.
#include <string.h>
#include <vips/vips.h>

static inline void graft_vips_silent_log(
    const gchar *domain, GLogLevelFlags level, const gchar *message, gpointer data) {
    (void)domain; (void)level; (void)message; (void)data;
}

// VIPS_INIT once per process; the cache is off (a batch tool opens every file once), and
// libvips' own warnings on stderr ("error in tile 0 x 0") are silenced: failures reach the
// caller through return codes and the error buffer, reported as one line per file.
// Returns 0 on success.
static inline int graft_vips_init(const char *argv0) {
    if (VIPS_INIT(argv0)) return -1;
    vips_cache_set_max(0);
    g_log_set_handler("VIPS", G_LOG_LEVEL_WARNING | G_LOG_LEVEL_MESSAGE | G_LOG_LEVEL_INFO, graft_vips_silent_log, NULL);
    return 0;
}

// Worker threads of each libvips pipeline.
static inline void graft_vips_set_concurrency(int n) { vips_concurrency_set(n); }

// The error text accumulated by this process (copy it, then call graft_vips_error_clear).
static inline const char *graft_vips_error_buffer(void) { return vips_error_buffer(); }
static inline void graft_vips_error_clear(void) { vips_error_clear(); }

static inline void graft_vips_unref(VipsImage *image) { g_object_unref(image); }
static inline void graft_vips_free(void *p) { g_free(p); }

// Opens an encoded image held in memory (the bytes must outlive the image): sequential
// access, no autorotation (libvips never rotates unless asked), failing on truncation
// and decoder errors. NULL on error. Reading from memory avoids libvips' parsing of
// "[options]" in file names.
static inline VipsImage *graft_vips_load_buffer(const void *bytes, size_t length) {
    return vips_image_new_from_buffer(
        bytes, length, "", "access", VIPS_ACCESS_SEQUENTIAL, "fail_on", VIPS_FAIL_ON_ERROR, NULL);
}

// Opens an image file for its header only: libvips reads the header when the image is
// made and decodes no pixel until one is asked for (sequential access, no autorotation).
// NULL on error. libvips parses "name[options]" in file names: callers pass names
// without '[' (or read the bytes and use graft_vips_load_buffer).
static inline VipsImage *graft_vips_header_file(const char *path) {
    return vips_image_new_from_file(path, "access", VIPS_ACCESS_SEQUENTIAL, NULL);
}

static inline int graft_vips_width(VipsImage *image) { return vips_image_get_width(image); }
static inline int graft_vips_height(VipsImage *image) { return vips_image_get_height(image); }
static inline int graft_vips_bands(VipsImage *image) { return vips_image_get_bands(image); }
static inline int graft_vips_format(VipsImage *image) { return (int)vips_image_get_format(image); }
static inline int graft_vips_interpretation(VipsImage *image) { return (int)vips_image_get_interpretation(image); }
// Pages (frames) in the file: more than 1 for an animated WebP (libvips loads only the first).
static inline int graft_vips_n_pages(VipsImage *image) { return vips_image_get_n_pages(image); }
static inline int graft_vips_has_alpha(VipsImage *image) { return vips_image_hasalpha(image) ? 1 : 0; }

// Decodes every pixel (to find truncated or corrupt data) and discards them. 0 on success.
static inline int graft_vips_decode_all(VipsImage *image) {
    double mean;
    return vips_avg(image, &mean, NULL);
}

// The last band (the alpha) as 8-bit samples, row-major, fully decoded: 16-bit values
// become v >> 8; other non-8-bit formats are cast (clamped). Free the result with
// graft_vips_free. NULL on error.
static inline unsigned char *graft_vips_alpha8(VipsImage *image, size_t *length) {
    VipsImage *band = NULL, *shifted = NULL, *byte = NULL;
    unsigned char *out = NULL;
    if (vips_extract_band(image, &band, vips_image_get_bands(image) - 1, NULL)) return NULL;
    VipsImage *source = band;
    if (vips_image_get_format(band) == VIPS_FORMAT_USHORT) {
        if (vips_rshift_const1(band, &shifted, 8.0, NULL)) goto done;
        source = shifted;
    }
    if (vips_cast(source, &byte, VIPS_FORMAT_UCHAR, NULL)) goto done;
    out = (unsigned char *)vips_image_write_to_memory(byte, length);
done:
    if (byte) g_object_unref(byte);
    if (shifted) g_object_unref(shifted);
    g_object_unref(band);
    return out;
}

// Gaussian blur of width×height one-band double samples into out (same size), through
// vips_gaussblur in float precision. The mask keeps the taps whose Gaussian is at least
// min_ampl (libvips accepts 0.001 and up); edges are extended by copying (clamped).
// 0 on success.
static inline int graft_vips_gaussblur(
    const double *in, int width, int height, double sigma, double min_ampl, double *out) {
    VipsImage *image = vips_image_new_from_memory(
        in, (size_t)width * (size_t)height * sizeof(double), width, height, 1, VIPS_FORMAT_DOUBLE);
    if (!image) return -1;
    VipsImage *blurred = NULL;
    int r = vips_gaussblur(image, &blurred, sigma, "min_ampl", min_ampl, "precision", VIPS_PRECISION_FLOAT, NULL);
    g_object_unref(image);
    if (r) return r;
    VipsImage *d = NULL;
    r = vips_cast(blurred, &d, VIPS_FORMAT_DOUBLE, NULL);
    g_object_unref(blurred);
    if (r) return r;
    size_t length = 0;
    void *mem = vips_image_write_to_memory(d, &length);
    g_object_unref(d);
    if (!mem) return -1;
    if (length != (size_t)width * (size_t)height * sizeof(double)) { g_free(mem); return -1; }
    memcpy(out, mem, length);
    g_free(mem);
    return 0;
}

// Encodes width×height 8-bit grey samples as a PNG (colour type 0, depth 8, no metadata
// chunks: strip), zlib level 6. Free *buffer with graft_vips_free. 0 on success.
static inline int graft_vips_grey_png(
    const unsigned char *pixels, int width, int height, void **buffer, size_t *length) {
    VipsImage *image = vips_image_new_from_memory(
        pixels, (size_t)width * (size_t)height, width, height, 1, VIPS_FORMAT_UCHAR);
    if (!image) return -1;
    int r = vips_pngsave_buffer(image, buffer, length, "strip", TRUE, "compression", 6, NULL);
    g_object_unref(image);
    return r;
}

// For tests and samples: saves raw samples (bands 1-4; format VIPS_FORMAT_UCHAR or
// VIPS_FORMAT_USHORT) to a file whose suffix picks the encoder (.png, .jpg, .webp...).
// 0 on success.
static inline int graft_vips_save_samples(
    const void *samples, int width, int height, int bands, int format, const char *path) {
    size_t sampleSize = format == VIPS_FORMAT_USHORT ? 2 : 1;
    VipsImage *raw = vips_image_new_from_memory(
        samples, (size_t)width * height * bands * sampleSize, width, height, bands, (VipsBandFormat)format);
    if (!raw) return -1;
    VipsInterpretation interpretation = bands <= 2
        ? (format == VIPS_FORMAT_USHORT ? VIPS_INTERPRETATION_GREY16 : VIPS_INTERPRETATION_B_W)
        : (format == VIPS_FORMAT_USHORT ? VIPS_INTERPRETATION_RGB16 : VIPS_INTERPRETATION_sRGB);
    VipsImage *tagged = NULL;
    int r = vips_copy(raw, &tagged, "interpretation", interpretation, NULL);
    if (r == 0) {
        r = vips_image_write_to_file(tagged, path, NULL);
        g_object_unref(tagged);
    }
    g_object_unref(raw);
    return r;
}

// For tests: saves 8-bit samples as a palette PNG (alpha becomes a tRNS chunk when bands = 4).
static inline int graft_vips_save_palette_png(
    const void *samples, int width, int height, int bands, const char *path) {
    VipsImage *raw = vips_image_new_from_memory(
        samples, (size_t)width * height * bands, width, height, bands, VIPS_FORMAT_UCHAR);
    if (!raw) return -1;
    int r = vips_pngsave(raw, path, "palette", TRUE, "Q", 100, "dither", 0.0, NULL);
    g_object_unref(raw);
    return r;
}

// For tests: saves `pages` frames stacked vertically (each width x pageHeight, 8-bit, bands
// 3 or 4) as an animated WebP.
static inline int graft_vips_save_animated_webp(
    const void *samples, int width, int pageHeight, int pages, int bands, const char *path) {
    VipsImage *raw = vips_image_new_from_memory(
        samples, (size_t)width * pageHeight * pages * bands, width, pageHeight * pages, bands, VIPS_FORMAT_UCHAR);
    if (!raw) return -1;
    VipsImage *copy = NULL;
    int r = vips_copy(raw, &copy, NULL);
    if (r == 0) {
        vips_image_set_int(copy, "page-height", pageHeight);
        r = vips_webpsave(copy, path, "lossless", TRUE, NULL);
        g_object_unref(copy);
    }
    g_object_unref(raw);
    return r;
}

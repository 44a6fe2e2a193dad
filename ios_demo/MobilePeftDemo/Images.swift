import CoreGraphics
import Foundation
import ImageIO
import PersonalizationCore

/// Image files -> the core's `Image`, decoded as PIL decodes them for the SDK: a grey image stays
/// one channel, anything else becomes 8-bit RGB (alpha dropped). The size is read before decoding,
/// so a decompression bomb is refused with the SDK's pixel limit.
enum Images {
    static func decode(_ url: URL) throws -> Image {
        guard let source = CGImageSourceCreateWithURL(url as CFURL, nil) else { throw DataError("cannot open image \(url.path)") }
        if let props = CGImageSourceCopyPropertiesAtIndex(source, 0, nil) as? [CFString: Any],
           let w = props[kCGImagePropertyPixelWidth] as? Int, let h = props[kCGImagePropertyPixelHeight] as? Int {
            try FolderDataset.checkSize(url, width: w, height: h)
        }
        guard let image = CGImageSourceCreateImageAtIndex(source, 0, nil) else { throw DataError("cannot decode image \(url.path)") }
        let grey = image.colorSpace?.model == .monochrome
        let w = image.width, h = image.height
        let channels = grey ? 1 : 3
        var out = [UInt8](repeating: 0, count: w * h * channels)
        if grey {
            let ctx = CGContext(data: &out, width: w, height: h, bitsPerComponent: 8, bytesPerRow: w,
                                space: CGColorSpaceCreateDeviceGray(), bitmapInfo: CGImageAlphaInfo.none.rawValue)
            ctx?.draw(image, in: CGRect(x: 0, y: 0, width: w, height: h))
        } else {
            var rgba = [UInt8](repeating: 0, count: w * h * 4)
            let ctx = CGContext(data: &rgba, width: w, height: h, bitsPerComponent: 8, bytesPerRow: w * 4,
                                space: CGColorSpace(name: CGColorSpace.sRGB)!, bitmapInfo: CGImageAlphaInfo.noneSkipLast.rawValue)
            ctx?.draw(image, in: CGRect(x: 0, y: 0, width: w, height: h))
            for p in 0..<(w * h) { for c in 0..<3 { out[p * 3 + c] = rgba[p * 4 + c] } }
        }
        return try Image.fromBytes(height: h, width: w, channels: channels, pixels: out)
    }
}

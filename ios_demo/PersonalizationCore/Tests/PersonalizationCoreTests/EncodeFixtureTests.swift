import Foundation
import XCTest
@testable import PersonalizationCore
#if canImport(ImageIO)
import CoreGraphics
import ImageIO
#endif

/// Image and text encoding against fixtures/{encode.json, encode_pixels.f32} (the SDK's Encoder).
final class EncodeFixtureTests: XCTestCase {
    var fx = JSONObject()
    var encoder: InputEncoder!
    var tokenizer: WordLevelTokenizer!
    var pixels: [Float] = []

    override func setUpWithError() throws {
        fx = try Fixtures.json("encode.json")
        let manifest = try Manifest.validateBundle(Fixtures.file("bundle"))
        tokenizer = try WordLevelTokenizer.load(Fixtures.file("bundle").appendingPathComponent(manifest.inputSpec.tokenizerFile))
        encoder = InputEncoder(manifest.inputSpec, tokenizer)
        let b = [UInt8](try Data(contentsOf: Fixtures.file("encode_pixels.f32")))
        pixels = stride(from: 0, to: b.count, by: 4).map { p in
            Float(bitPattern: UInt32(b[p]) | UInt32(b[p + 1]) << 8 | UInt32(b[p + 2]) << 16 | UInt32(b[p + 3]) << 24)
        }
    }

    /// A PNG decoded as PIL decodes it for the SDK: grey stays one channel, anything else RGB
    /// (ImageIO; Linux has no PNG decoder in Foundation, so those cases are left out there).
    private func decodePng(_ url: URL) throws -> Image? {
        #if canImport(ImageIO)
        guard let src = CGImageSourceCreateWithURL(url as CFURL, nil), let img = CGImageSourceCreateImageAtIndex(src, 0, nil) else {
            throw DataError("cannot decode \(url.path)")
        }
        let grey = img.colorSpace?.model == .monochrome
        let c = grey ? 1 : 3
        let w = img.width, h = img.height
        var rgba = [UInt8](repeating: 0, count: w * h * 4)
        let ctx = CGContext(data: &rgba, width: w, height: h, bitsPerComponent: 8, bytesPerRow: w * 4,
                            space: CGColorSpace(name: CGColorSpace.sRGB)!, bitmapInfo: CGImageAlphaInfo.noneSkipLast.rawValue)!
        ctx.draw(img, in: CGRect(x: 0, y: 0, width: w, height: h))
        var bytes = [UInt8](repeating: 0, count: w * h * c)
        for p in 0..<(w * h) { for k in 0..<c { bytes[p * c + k] = rgba[p * 4 + k] } }
        return try Image.fromBytes(height: h, width: w, channels: c, pixels: bytes)
        #else
        return nil
        #endif
    }

    private func imageOf(_ c: JSONObject) throws -> Image? {
        if let file = c["file"]?.string { return try decodePng(Fixtures.file(file)) }
        let h = c["height"]!.i, w = c["width"]!.i, ch = c["channels"]!.i
        if c["dtype"] == .string("uint8") { return try Image.fromBytes(height: h, width: w, channels: ch, pixels: c["values"]!.ints.map { UInt8($0) }) }
        return try Image.fromFloats(height: h, width: w, channels: ch, values: c["values"]!.floats)
    }

    func testImagesEncodeBitForBit() throws {
        var checked = 0
        for case let .object(c) in fx["images"]!.list {
            let n = c["shape"]!.ints.reduce(1, *)
            let offset = c["offset"]!.i
            let expected = Array(pixels[offset..<(offset + n)])
            guard let image = try imageOf(c) else { continue } // a PNG without ImageIO (Linux)
            let actual = encoder.image(image)
            assertClose(expected, actual, "image \(c["name"]!.str)")
            assertBitIdentical(expected, actual, "image \(c["name"]!.str)")
            checked += 1
        }
        XCTAssertGreaterThanOrEqual(checked, 5)
    }

    func testTextsEncodeAsTheSdkEncodesThem() throws {
        for case let .object(c) in fx["texts"]!.list {
            let q = c["question"]!.str, a = c["answer"]!.str
            if let error = c["error"] {
                do {
                    _ = try encoder.text(q, a)
                    XCTFail("\(Py.repr(q)) / \(Py.repr(a)) encoded; the SDK refuses it")
                } catch let e as DataError {
                    XCTAssertEqual(error.str, e.message)
                }
                continue
            }
            let (ids, labels) = try encoder.text(q, a)
            XCTAssertEqual(c["input_ids"]!.ints.map(Int64.init), ids, "input_ids of \(Py.repr(q))")
            XCTAssertEqual(c["labels"]!.ints.map(Int64.init), labels, "labels of \(Py.repr(q))")
        }
    }

    func testPromptsEncodeAsTheSdkEncodesThem() throws {
        for case let .object(c) in fx["prompts"]!.list {
            let (ids, length) = try encoder.prompt(c["question"]!.str)
            XCTAssertEqual(c["input_ids"]!.ints.map(Int64.init), ids)
            XCTAssertEqual(c["length"]!.i, length)
        }
    }

    func testTokenizerPiecesAndIdsAreTheLibrarys() throws {
        for case let .object(c) in fx["pieces"]!.list {
            let text = c["text"]!.str
            if let pieces = c["pieces"] { XCTAssertEqual(pieces.strings, tokenizer.pieces(text).map { $0.0 }, "pieces of \(Py.repr(text))") }
            XCTAssertEqual(c["ids"]!.ints, tokenizer.encode(text), "ids of \(Py.repr(text))")
        }
    }

    func testDecodeAnswerIsTheSdks() throws {
        for case let .object(c) in fx["decode"]!.list { XCTAssertEqual(c["text"]!.str, encoder.decodeAnswer(c["ids"]!.ints)) }
    }
}
